//! Appending to an archive: the lock, the tail check on open, members filled in two
//! lanes (text and binary, see `compress.rs`), compression on a second thread, and the
//! durability order.
//!
//! Crash model: a member is appended at the end of the file as it is compressed (in
//! chunks of 256 KiB, one member at a time); a crash leaves at most one incomplete
//! member at the tail. `finish_member` returns only after
//! `fsync` of the file (and of the directory when this open created the file), so a
//! catalog committed after it never points at bytes that can vanish. On open, bytes
//! past the last complete member are checked to be such a leftover and cut; anything
//! else (damage, a file shorter than the caller committed) is reported, never repaired
//! by rewriting: existing members are never modified.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha1::{Digest, Sha1};

use super::compress::{Lane, Level, classify, gzip_member_to};
use super::error::{ArchiveError, Damage};
use super::error::{ArchiveFailure, Result};
use super::names::{FORMAT_ENTRY, check_name};
use super::read::{Members, is_crash_leftover, read_member_at};
use super::tarfmt::{entry_headers, padded};
use super::{EntryLoc, FORMAT_VERSION, MemberInfo, format_entry_content, parse_format_entry};
use crate::cyrus::Guid;
use crate::io_error::IoContext;

/// Default uncompressed size at which a member is closed (4 MiB): bounds the inflate
/// work of reading one message (~12 ms worst case) and the writer's memory (two lanes
/// filling, one member compressing, one queued: ~16 MiB) at no cost in ratio
/// (deflate's window is 32 KiB; a member costs 18 bytes of framing).
pub const DEFAULT_MEMBER_TARGET: u64 = 4 << 20;

/// How to open an archive for appending.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The archive length the caller's catalog has committed. The archive must be at
    /// least this long, and only bytes past it are checked (faster than a full scan).
    /// `None`: check from the start.
    pub committed_len: Option<u64>,
    /// Uncompressed size at which a member is closed; an entry bigger than this gets a
    /// member of its own.
    pub member_target: u64,
    /// Level for text members.
    pub text_level: Level,
    /// Level for binary (base64-heavy) members.
    pub binary_level: Level,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            committed_len: None,
            member_target: DEFAULT_MEMBER_TARGET,
            text_level: Lane::Text.default_level(),
            binary_level: Lane::Binary.default_level(),
        }
    }
}

/// What `open` found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// The file did not exist (or was empty) and a `cyrvault/FORMAT` member was written.
    pub created: bool,
    /// A crash leftover that was cut: `(offset, len)`.
    pub cut: Option<(u64, u64)>,
    /// Complete members past `committed_len` (written and synced by a run that died
    /// before committing its catalog). They are kept; the caller indexes them.
    pub uncommitted: Vec<MemberInfo>,
    /// The archive length after open.
    pub len: u64,
}

/// A member's tar bytes waiting to be compressed.
#[derive(Default)]
struct LaneBuf {
    tar: Vec<u8>,
    entries: Vec<EntryLoc>,
}

enum Job {
    /// One member: the concatenation of `parts` (tar bytes) compressed.
    Member {
        parts: Vec<Vec<u8>>,
        entries: Vec<EntryLoc>,
        level: Level,
    },
    Sync,
}

enum Done {
    Member(MemberInfo),
    Synced,
}

/// Appends members to one archive, holding its exclusive lock while it lives.
pub struct ArchiveWriter {
    path: PathBuf,
    opts: WriterOptions,
    lanes: [LaneBuf; 2],
    jobs: Option<SyncSender<Job>>,
    done: Receiver<std::io::Result<Done>>,
    worker: Option<JoinHandle<()>>,
    /// Jobs sent whose answer has not been received.
    in_flight: usize,
    /// Members written since the last `finish_member`.
    written: Vec<MemberInfo>,
    /// The directory must be fsynced at the next `finish_member` (new file).
    sync_dir: bool,
    /// Members were handed to the compressor since the last fsync.
    unsynced: bool,
    poisoned: bool,
    report: OpenReport,
    /// fsyncs done (file and directory), for the run report.
    fsyncs: u64,
}

impl ArchiveWriter {
    /// Open (or create) the archive at `path` with default options.
    pub fn open(path: &Path) -> Result<ArchiveWriter> {
        Self::open_with(path, WriterOptions::default())
    }

    /// Open (or create) the archive at `path`: lock it (a second writer gets
    /// `ArchiveError::Locked` after a short grace, `lock.rs`), check and repair the tail, check the format
    /// version, and write the `cyrvault/FORMAT` member into a new archive.
    pub fn open_with(path: &Path, opts: WriterOptions) -> Result<ArchiveWriter> {
        let existed = path.exists();
        // A caller that has committed bytes expects the file: never create it anew then.
        let may_create = opts.committed_len.unwrap_or(0) == 0;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(may_create)
            .truncate(false)
            .open(path)
            .at("opening", path)?;
        super::lock::lock_exclusive(&file, path)?;
        // Between our open and our lock, retention may have renamed a rewritten archive
        // over the path (doc/retention.md): then this lock is the replaced file's.
        // Temporary: the next attempt opens the new file.
        if !super::lock::same_file(&file, path)? {
            return Err(ArchiveFailure::archive(path, ArchiveError::Locked));
        }
        let mut report = repair_tail(&mut file, path, opts.committed_len)?;
        if report.len > 0 {
            check_format(&mut file, path)?;
        }
        file.seek(SeekFrom::Start(report.len))
            .at("seeking in", path)?;
        let worker_file = file.try_clone().at("opening", path)?;
        let (jobs, done, worker) = spawn_worker(worker_file, path, report.len)?;
        let mut w = ArchiveWriter {
            path: path.to_path_buf(),
            opts,
            lanes: [LaneBuf::default(), LaneBuf::default()],
            jobs: Some(jobs),
            done,
            worker: Some(worker),
            in_flight: 0,
            written: Vec::new(),
            sync_dir: !existed,
            unsynced: false,
            poisoned: false,
            report: OpenReport::default(),
            fsyncs: u64::from(report.cut.is_some()),
        };
        // The lock lives on `file`'s open file description, shared with the worker's clone.
        drop(file);
        if report.len == 0 {
            w.begin_member()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            w.add(FORMAT_ENTRY, &format_entry_content(), now)?;
            let m = w.finish_member()?;
            report.created = true;
            report.len = m.last().map_or(0, MemberInfo::end);
        }
        w.report = report;
        Ok(w)
    }

    /// What `open` found: cut leftovers, uncommitted members, whether it created the file.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many fsyncs (of the file or its directory) this writer has done.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    fn err(&self, e: ArchiveError) -> ArchiveFailure {
        ArchiveFailure::archive(&self.path, e)
    }

    /// Close the members being filled, so the next entries start new ones. (They are
    /// compressed and written in the background; `finish_member` makes them durable.)
    pub fn begin_member(&mut self) -> Result<()> {
        for lane in [Lane::Text, Lane::Binary] {
            self.flush_lane(lane)?;
        }
        Ok(())
    }

    /// Add an entry of `bytes` named `name` (see `names.rs`), with modification time
    /// `mtime` (seconds since the epoch). The entry goes whole into the member of its
    /// lane; a member that would pass the target size is closed first.
    pub fn add(&mut self, name: &str, bytes: &[u8], mtime: u64) -> Result<()> {
        self.add_entry(name, bytes, mtime, None)
    }

    /// [`ArchiveWriter::add`] of bytes whose SHA-1 the caller has just computed (a
    /// message checked against its GUID as it arrived): the writer records `sha1`
    /// instead of hashing the bytes a second time. The run's own check of message
    /// entries against their names (`backup::run`) then compares that hash.
    pub fn add_hashed(&mut self, name: &str, bytes: &[u8], mtime: u64, sha1: Guid) -> Result<()> {
        self.add_entry(name, bytes, mtime, Some(sha1))
    }

    fn add_entry(
        &mut self,
        name: &str,
        bytes: &[u8],
        mtime: u64,
        sha1: Option<Guid>,
    ) -> Result<()> {
        if self.poisoned {
            return Err(self.err(ArchiveError::Poisoned));
        }
        check_name(name).map_err(|e| self.err(e))?;
        let lane = classify(bytes);
        let size = bytes.len() as u64;
        let headers = entry_headers(name, size, mtime);
        let need = padded(size)
            .and_then(|p| p.checked_add(headers.len() as u64))
            .ok_or_else(|| {
                self.err(ArchiveError::BadName {
                    name: name.to_string(),
                    why: "entry too large",
                })
            })?;
        let buf = &self.lanes[lane as usize];
        if !buf.tar.is_empty() && buf.tar.len() as u64 + need > self.opts.member_target {
            self.flush_lane(lane)?;
        }
        let buf = &mut self.lanes[lane as usize];
        if buf.tar.capacity() == 0 {
            // One allocation of the member's size, not a doubling series (which leaves
            // up to twice the target allocated per lane).
            let want = self.opts.member_target.max(need).min(1 << 30);
            buf.tar.reserve_exact(usize::try_from(want).unwrap_or(0));
        }
        let offset_in_member = (buf.tar.len() + headers.len()) as u64;
        buf.tar.extend_from_slice(&headers);
        buf.tar.extend_from_slice(bytes);
        let padded_len = padded(buf.tar.len() as u64).unwrap_or(0) as usize;
        buf.tar.resize(padded_len, 0);
        buf.entries.push(EntryLoc {
            name: name.to_string(),
            offset_in_member,
            size,
            sha1: sha1.unwrap_or_else(|| Guid(Sha1::digest(bytes).into())),
        });
        if buf.tar.len() as u64 >= self.opts.member_target {
            self.flush_lane(lane)?;
        }
        Ok(())
    }

    /// [`ArchiveWriter::add`] taking the bytes by value: an entry that gets a member
    /// of its own (bigger than the member target, e.g. the `cyrus.index` of a folder
    /// of 200,000 messages) is compressed from `bytes` itself, with no copy into a
    /// lane; smaller ones are copied as `add` does.
    pub fn add_owned(&mut self, name: &str, bytes: Vec<u8>, mtime: u64) -> Result<()> {
        if self.poisoned {
            return Err(self.err(ArchiveError::Poisoned));
        }
        check_name(name).map_err(|e| self.err(e))?;
        let size = bytes.len() as u64;
        let headers = entry_headers(name, size, mtime);
        let Some(padded_size) = padded(size) else {
            return Err(self.err(ArchiveError::BadName {
                name: name.to_string(),
                why: "entry too large",
            }));
        };
        if padded_size.saturating_add(headers.len() as u64) < self.opts.member_target {
            return self.add(name, &bytes, mtime);
        }
        let lane = classify(&bytes);
        self.flush_lane(lane)?;
        let entry = EntryLoc {
            name: name.to_string(),
            offset_in_member: headers.len() as u64,
            size,
            sha1: Guid(Sha1::digest(&bytes).into()),
        };
        let pad = vec![0u8; usize::try_from(padded_size - size).unwrap_or(0)];
        let level = self.level(lane);
        self.send(Job::Member {
            parts: vec![headers, bytes, pad],
            entries: vec![entry],
            level,
        })?;
        self.unsynced = true;
        self.collect_some()
    }

    /// The members finished since the last call (or `finish_member`), in file order,
    /// without waiting or syncing: a long run hands them to its caller as they come
    /// instead of holding every entry until the end. They are not durable yet.
    pub fn take_written(&mut self) -> Vec<MemberInfo> {
        std::mem::take(&mut self.written)
    }

    fn level(&self, lane: Lane) -> Level {
        match lane {
            Lane::Text => self.opts.text_level,
            Lane::Binary => self.opts.binary_level,
        }
    }

    /// End the open members, write them, fsync the file (and the directory of a new
    /// file), and return every member written since the last call, in file order. When
    /// this returns, the members are durable and the caller may commit its catalog.
    pub fn finish_member(&mut self) -> Result<Vec<MemberInfo>> {
        self.begin_member()?;
        // Nothing written since the last fsync (a run where nothing changed): no
        // fsync to pay for.
        if self.unsynced {
            self.send(Job::Sync)?;
            while let Done::Member(m) = self.receive()? {
                self.written.push(m);
            }
            self.unsynced = false;
            self.fsyncs += 1;
        }
        if self.sync_dir {
            sync_dir(&self.path)?;
            self.sync_dir = false;
            self.fsyncs += 1;
        }
        Ok(std::mem::take(&mut self.written))
    }

    fn flush_lane(&mut self, lane: Lane) -> Result<()> {
        let buf = std::mem::take(&mut self.lanes[lane as usize]);
        if buf.tar.is_empty() {
            return Ok(());
        }
        let level = self.level(lane);
        self.send(Job::Member {
            parts: vec![buf.tar],
            entries: buf.entries,
            level,
        })?;
        self.unsynced = true;
        self.collect_some()
    }

    /// Collect finished members, waiting only while more than one is in flight (the
    /// queue stays short: at most one member compressing and one waiting).
    fn collect_some(&mut self) -> Result<()> {
        while self.in_flight > 1 {
            if let Done::Member(m) = self.receive()? {
                self.written.push(m);
            }
        }
        Ok(())
    }

    fn send(&mut self, job: Job) -> Result<()> {
        if self.poisoned {
            return Err(self.err(ArchiveError::Poisoned));
        }
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            self.poisoned = true;
            return Err(self.err(ArchiveError::Poisoned));
        }
        self.in_flight += 1;
        Ok(())
    }

    fn receive(&mut self) -> Result<Done> {
        let got = self.done.recv();
        self.in_flight = self.in_flight.saturating_sub(1);
        match got {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => {
                self.poisoned = true;
                Err(ArchiveFailure::io("writing", &self.path, e))
            }
            Err(_) => {
                self.poisoned = true;
                Err(self.err(ArchiveError::Poisoned))
            }
        }
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        // Entries not passed through `finish_member` are dropped, like a crash; members
        // already queued are written by the worker before it exits.
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

type WorkerParts = (
    SyncSender<Job>,
    Receiver<std::io::Result<Done>>,
    JoinHandle<()>,
);

/// The compressing writer thread: compresses each member and appends it, in order.
fn spawn_worker(mut file: File, path: &Path, mut end: u64) -> Result<WorkerParts> {
    // A rendezvous: the caller fills the next member while this thread compresses the
    // last one, and no third member waits in between (4 MiB less per writer, issue 10:
    // client RSS bounded whatever the folder size).
    let (jobs, job_rx) = sync_channel::<Job>(0);
    let (done_tx, done) = sync_channel::<std::io::Result<Done>>(64);
    let worker = std::thread::Builder::new()
        .name("archive-deflate".into())
        .spawn(move || {
            for job in job_rx {
                let result = match job {
                    Job::Member {
                        parts,
                        entries,
                        level,
                    } => {
                        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                        let len: u64 = slices.iter().map(|p| p.len() as u64).sum();
                        gzip_member_to(&slices, level, &mut file).map(|(written, crc32)| {
                            let m = MemberInfo {
                                offset: end,
                                compressed_len: written,
                                uncompressed_len: len,
                                crc32,
                                entries,
                            };
                            end += written;
                            Done::Member(m)
                        })
                    }
                    Job::Sync => file.sync_all().map(|()| Done::Synced),
                };
                let failed = result.is_err();
                if done_tx.send(result).is_err() || failed {
                    return;
                }
            }
        })
        .at("starting the compression thread for", path)?;
    Ok((jobs, done, worker))
}

/// fsync the directory holding `path`, so a new file's directory entry is durable.
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(File::open(dir)
        .and_then(|d| d.sync_all())
        .at("syncing directory", dir)?)
}

/// Check the bytes past `committed_len` (or all of them): keep complete members, cut a
/// crash leftover, refuse anything else.
fn repair_tail(file: &mut File, path: &Path, committed: Option<u64>) -> Result<OpenReport> {
    let len = file.metadata().at("reading metadata of", path)?.len();
    let start = committed.unwrap_or(0);
    if len < start {
        return Err(ArchiveFailure::archive(
            path,
            ArchiveError::ShorterThanCommitted {
                len,
                committed: start,
            },
        ));
    }
    let mut report = OpenReport {
        len,
        ..OpenReport::default()
    };
    file.seek(SeekFrom::Start(start)).at("seeking in", path)?;
    let reader = file.try_clone().at("opening", path)?;
    let mut members = Members::at(reader, start, path);
    let mut good_end = start;
    let mut failure = None;
    for m in members.by_ref() {
        match m {
            Ok(m) => {
                good_end = m.end();
                report.uncommitted.push(m);
            }
            Err(e) => match e.as_archive() {
                Some(ArchiveError::Damaged { damage, .. }) => {
                    failure = Some(damage.clone());
                    break;
                }
                _ => return Err(e),
            },
        }
    }
    let Some(damage) = failure else {
        return Ok(report);
    };
    if !is_crash_leftover(file, path, good_end, len)? {
        if good_end == start && committed.is_some_and(|c| c > 0) && damage == Damage::BadMagic {
            return Err(ArchiveFailure::archive(
                path,
                ArchiveError::NotMemberBoundary { offset: start },
            ));
        }
        return Err(ArchiveFailure::archive(
            path,
            ArchiveError::TailNotLeftover {
                offset: good_end,
                len: len - good_end,
                damage,
            },
        ));
    }
    log::warn!(
        target: "archive",
        "{}: cutting {} bytes of an incomplete member at offset {} (crash leftover)",
        path.display(),
        len - good_end,
        good_end
    );
    file.set_len(good_end).at("truncating", path)?;
    file.sync_all().at("syncing", path)?;
    report.cut = Some((good_end, len - good_end));
    report.len = good_end;
    Ok(report)
}

/// The first member must start with `cyrvault/FORMAT` of a version we read.
fn check_format(file: &mut File, path: &Path) -> Result<()> {
    let first = read_member_at(file, path, 0)?;
    let entry = first
        .entries
        .first()
        .filter(|e| e.name == FORMAT_ENTRY)
        .ok_or_else(|| ArchiveFailure::archive(path, ArchiveError::NotAnArchive))?;
    let bytes = super::read::read_entry_at(file, path, 0, entry.offset_in_member, entry.size)?;
    match parse_format_entry(&bytes) {
        Some(v) if v <= FORMAT_VERSION => Ok(()),
        Some(v) => Err(ArchiveFailure::archive(
            path,
            ArchiveError::UnsupportedVersion {
                found: v,
                supported: FORMAT_VERSION,
            },
        )),
        None => Err(ArchiveFailure::archive(path, ArchiveError::NotAnArchive)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::compress::gzip_member;

    fn member(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (name, data) in entries {
            tar.extend(entry_headers(name, data.len() as u64, 0));
            tar.extend_from_slice(data);
            tar.resize(padded(tar.len() as u64).unwrap() as usize, 0);
        }
        gzip_member(&tar, Level::Deflate(6)).0
    }

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "cyrvault-archive-unit-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn newer_format_version_is_refused() {
        let p = scratch("v3");
        std::fs::write(
            &p,
            member(&[(FORMAT_ENTRY, b"cyrvault archive format 3\n")]),
        )
        .unwrap();
        let e = ArchiveWriter::open(&p).err().unwrap();
        assert_eq!(
            e.as_archive(),
            Some(&ArchiveError::UnsupportedVersion {
                found: 3,
                supported: FORMAT_VERSION
            })
        );
        std::fs::write(&p, member(&[("messages/aa/x", b"hi")])).unwrap();
        let e = ArchiveWriter::open(&p).err().unwrap();
        assert_eq!(e.as_archive(), Some(&ArchiveError::NotAnArchive));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn leftover_rules() {
        let p = scratch("leftover");
        let good = member(&[(FORMAT_ENTRY, b"cyrvault archive format 1\n")]);
        let next = member(&[("messages/aa/x", &b"y".repeat(5000))]);
        let check = |tail: &[u8]| {
            let mut bytes = good.clone();
            bytes.extend_from_slice(tail);
            std::fs::write(&p, &bytes).unwrap();
            let mut f = File::open(&p).unwrap();
            is_crash_leftover(&mut f, &p, good.len() as u64, bytes.len() as u64).unwrap()
        };
        assert!(check(&next[..next.len() - 1]), "a member short of one byte");
        assert!(check(&next[..3]), "a bare magic");
        assert!(check(&[0u8; 100]), "zeros only");
        let mut zero_filled = next[..20].to_vec();
        zero_filled.extend([0u8; 4096]);
        assert!(check(&zero_filled), "a prefix, then zero blocks");
        assert!(!check(b"garbage"), "garbage");
        let mut flipped = next.clone();
        let n = flipped.len();
        flipped[n - 5] ^= 1;
        assert!(!check(&flipped), "a complete member with a bad crc");
        // A broken member followed by an intact one is damage, not a leftover.
        let mut broken = next[..next.len() / 2].to_vec();
        broken.extend(&next);
        assert!(!check(&broken), "an intact member after the break");
        let _ = std::fs::remove_file(&p);
    }
}
