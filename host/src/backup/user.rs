//! The user-level files in a run: `USERFILES` (cyrvaultd) lists `seen`, `sub` and every
//! sieve file with its stat, `META` (a stock server) lists `seen`/`sub`; the listing
//! comes with `FMULTISTATUS` in the run's first round trip, and so does the quota
//! (`META <user> quota`, a cyrvaultd extension, `CAP QUOTA`: one short line per quota
//! root; a stock `backupcyrusd` has none). The files are fetched (`USERFILES FETCH`,
//! else `SNAPSHOT` or `META` items) on the first run, when that listing moved or when
//! the quota's roots or limits changed (not its usage, which moves with every
//! message), and stored anew only when their SHA-1s differ from the stored ones.
#![forbid(unsafe_code)]

use std::io::Write;

use super::Result;
use super::ext::{BackupExt, UserListing, UserStats};
use super::recover::user_file_entry;
use super::run::{RunCtx, now_secs, proto};
use crate::cyrus::Guid;
use crate::model::{UserFile, UserFileKind, UserStateRef};
use crate::protocol::client::{Collect, Receiver};
use crate::protocol::{DataHeader, ProtocolError, Reply, Request};

impl RunCtx<'_> {
    /// User-level files: fetched on the first run, or when the server's listing of
    /// them (`USERFILES`: seen, sub and every sieve file; `META`: seen and sub) differs
    /// from the last run's; stored anew only when their bytes differ from the last
    /// stored ones. A server with `SNAPSHOT` but without `USERFILES` (an older
    /// cyrvaultd) cannot list its sieve files, so there they are also fetched whenever
    /// a folder changed or went, as before.
    pub(super) fn user_state(
        &mut self,
        last_run: Option<u64>,
        prev: &BackupExt,
        listing: &UserListing,
    ) -> Result<(Option<UserStateRef>, Option<UserStats>)> {
        if self.userid.starts_with('%') {
            // A shared hierarchy (doc/protocol.md 2.8) has no seen, subscriptions or
            // sieve of its own: nothing to ask for.
            return Ok((None, None));
        }
        let userfiles = self.server.has("USERFILES");
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
        let blind_sieve = snapshot && !userfiles && changed_folders;
        let quota_key = listing.quota.as_deref().map(quota_limits_sha1);
        if let Some(p) = &prev.user
            && last_run.is_some()
            && listing.same_as(p)
            && p.sha1.get(QUOTA_KEY) == quota_key.as_ref()
            && !blind_sieve
        {
            return Ok(carried(p));
        }
        let files = if userfiles {
            self.fetch_user_files(Request::UserFiles {
                slot: self.server.slot(),
                user: self.userid.as_bytes().to_vec(),
                fetch: true,
            })?
        } else if snapshot {
            self.fetch_user_files(Request::Snapshot {
                slot: self.server.slot(),
                user: self.userid.as_bytes().to_vec(),
            })?
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
        let stats = UserStats {
            seen: listing.seen,
            sub: listing.sub,
            sha1,
            files: listing.files.clone(),
        };
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

    /// The user files of `USERFILES FETCH` or (an older cyrvaultd) `SNAPSHOT`, whose
    /// folder frames are discarded.
    fn fetch_user_files(&mut self, req: Request) -> Result<Vec<(UserFile, Vec<u8>)>> {
        let what = match req {
            Request::Snapshot { .. } => "SNAPSHOT",
            _ => "USERFILES",
        };
        let mut rx = SnapshotRx::default();
        self.server
            .client
            .fetch(&req, &mut rx)
            .map_err(|e| proto(self.server, what, e))?;
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
