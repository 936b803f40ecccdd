//! Appending messages over IMAP fast and in order.
//!
//! Messages go into each folder in ascending backed-up UID, so the restored folder
//! lists them in the order the user had them (new UIDs increase the same way). A
//! reader thread (its own handle on the archive) inflates and checks the messages
//! chunk by chunk in that order while the main thread appends the previous chunk:
//! one core decompresses and hashes while the other side (imapd) stores. Appends are
//! `MULTIAPPEND` commands (RFC 3502) of up to [`BATCH_MSGS`] messages, several in
//! flight at once (LITERAL+, so nothing waits for a continuation): Cyrus stores a
//! whole batch in one transaction, and the round trips overlap. A batch the server
//! refuses is retried message by message, so one bad message fails alone. Without
//! LITERAL+ each message is one synchronous `APPEND`.
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use super::imap::Sessions;
use super::{Progress, Source, Summary, imap_flags};
use crate::cyrus::Guid;
use crate::error::{Error, Result};
use crate::imap::{Arg, Client, format_internaldate};
use crate::model::RecordState;

/// Messages per MULTIAPPEND...
pub const BATCH_MSGS: usize = 64;
/// ...or bytes, whichever comes first.
pub const BATCH_BYTES: usize = 8 << 20;
/// Commands in flight.
const IN_FLIGHT: usize = 3;
/// What the reader thread inflates ahead (bytes of messages per chunk, two chunks
/// queued). Chunks follow UID order, so a member can be inflated again for the next
/// chunk; 8 MiB keeps that rare and the queue small.
const CHUNK_BYTES: u64 = 8 << 20;

/// One message to append.
#[derive(Debug, Clone)]
pub struct Job {
    /// The target folder (the user's name for it).
    pub folder: String,
    /// The backed-up record (flags, keywords, internal date).
    pub record: RecordState,
}

/// A batch sent and not answered yet.
struct Sent {
    tag: String,
    jobs: Vec<(usize, Vec<u8>)>,
}

/// Append every job (grouped by folder, ascending UID), counting into `sum`. With
/// `sessions` > 1 the folders are shared out over that many sessions of the user (by
/// bytes, each folder whole in one session, so its order holds), each with its own
/// archive reader: one imapd per session stores in parallel.
pub fn append_all(
    src: &mut Source,
    s: &mut Sessions<'_>,
    jobs: &[Job],
    sessions: usize,
    sum: &mut Summary,
    progress: &mut dyn Progress,
) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let groups = share_out(jobs, sessions.max(1));
    if groups.len() <= 1 {
        let tick = || progress.tick();
        return append_group(src, s.user_client(), jobs, sum, &mut { tick });
    }
    let target = s.target.clone();
    let progress = std::sync::Mutex::new(progress);
    let mut sums: Vec<Summary> = groups.iter().map(|_| Summary::default()).collect();
    let first = s.user_client();
    // A Source (SQLite) stays on one thread: each session gets its own handle.
    let sources = groups
        .iter()
        .map(|_| src.reopen())
        .collect::<Result<Vec<Source>>>()?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let progress = &progress;
        let mut handles = Vec::new();
        let mut first = Some(first);
        for ((g, sum_g), src) in groups.iter().zip(sums.iter_mut()).zip(sources) {
            let target = &target;
            let conn = first.take();
            handles.push(scope.spawn(move || -> Result<()> {
                let src = &src;
                let mut tick = || {
                    if let Ok(mut p) = progress.lock() {
                        p.tick();
                    }
                };
                match conn {
                    Some(c) => append_group(src, c, g, sum_g, &mut tick),
                    None => {
                        let mut c = super::imap::connect_as_user(target)?;
                        append_group(src, &mut c, g, sum_g, &mut tick)?;
                        Ok(c.logout()?)
                    }
                }
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::other("append thread panicked".into())))
            })
            .collect()
    });
    for g in sums {
        sum.appended += g.appended;
        sum.bytes += g.bytes;
        sum.failed += g.failed;
        sum.failures.extend(g.failures);
    }
    results.into_iter().collect()
}

/// The jobs split into at most `n` groups of whole folders, balanced by bytes.
fn share_out(jobs: &[Job], n: usize) -> Vec<Vec<Job>> {
    let mut folders: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut start = 0;
    for i in 1..=jobs.len() {
        if i == jobs.len() || jobs[i].folder != jobs[start].folder {
            let bytes = jobs[start..i].iter().map(|j| j.record.size).sum();
            folders.push((bytes, start..i));
            start = i;
        }
    }
    let n = n.min(folders.len()).max(1);
    folders.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut groups: Vec<(u64, Vec<std::ops::Range<usize>>)> = vec![(0, Vec::new()); n];
    for (bytes, r) in folders {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += bytes;
            g.1.push(r);
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|(_, mut ranges)| {
            ranges.sort_by_key(|r| r.start);
            ranges
                .into_iter()
                .flat_map(|r| jobs[r].iter().cloned())
                .collect()
        })
        .collect()
}

/// One session's share: read on a second thread, appended in order.
fn append_group(
    src: &Source,
    c: &mut Client,
    jobs: &[Job],
    sum: &mut Summary,
    tick: &mut dyn FnMut(),
) -> Result<()> {
    let guids: Vec<Guid> = jobs.iter().map(|j| j.record.guid).collect();
    let sizes: Vec<u64> = jobs.iter().map(|j| j.record.size).collect();
    let mut w = Writer::new(c, sum);
    let chunks = Source::chunks_by_size(&sizes, CHUNK_BYTES);
    src.read_ahead(&guids, &chunks, |i, b| {
        tick();
        match b {
            Ok(bytes) => w.push(jobs, i, bytes),
            Err(e) => {
                w.sum
                    .fail(&jobs[i].folder, Some(&jobs[i].record), e.to_string());
                Ok(())
            }
        }
    })?;
    w.finish(jobs)
}

/// Batches messages per folder and keeps a few MULTIAPPENDs in flight.
struct Writer<'c, 's> {
    c: &'c mut Client,
    sum: &'s mut Summary,
    pipelined: bool,
    multi: bool,
    open: Vec<(usize, Vec<u8>)>,
    open_bytes: usize,
    in_flight: VecDeque<Sent>,
}

impl<'c, 's> Writer<'c, 's> {
    fn new(c: &'c mut Client, sum: &'s mut Summary) -> Writer<'c, 's> {
        let pipelined = c.can_pipeline();
        let multi = c.has_capability("MULTIAPPEND");
        Writer {
            c,
            sum,
            pipelined,
            multi,
            open: Vec::new(),
            open_bytes: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// Add job `i` with its bytes; sends the open batch when it is full or the folder
    /// changes.
    fn push(&mut self, jobs: &[Job], i: usize, bytes: Vec<u8>) -> Result<()> {
        if !self.pipelined {
            return self.append_one(jobs, i, &bytes);
        }
        if let Some(&(first, _)) = self.open.first()
            && jobs[first].folder != jobs[i].folder
        {
            self.send_open(jobs)?;
        }
        self.open_bytes += bytes.len();
        self.open.push((i, bytes));
        let limit = if self.multi { BATCH_MSGS } else { 1 };
        if self.open.len() >= limit || self.open_bytes >= BATCH_BYTES {
            self.send_open(jobs)?;
        }
        Ok(())
    }

    fn send_open(&mut self, jobs: &[Job]) -> Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.open);
        self.open_bytes = 0;
        let folder = jobs[batch[0].0].folder.clone();
        let parts: Vec<(String, String)> = batch
            .iter()
            .map(|(i, _)| {
                let r = &jobs[*i].record;
                (
                    format!("({})", imap_flags(r).join(" ")),
                    format!("\"{}\"", format_internaldate(r.internaldate, 0)),
                )
            })
            .collect();
        let mut args = vec![Arg::Atom("APPEND"), Arg::Str(folder.as_bytes())];
        for ((flags, date), (_, bytes)) in parts.iter().zip(&batch) {
            args.push(Arg::Atom(flags));
            args.push(Arg::Atom(date));
            args.push(Arg::Literal(bytes));
        }
        let tag = self.c.send_ahead(&args)?;
        self.in_flight.push_back(Sent { tag, jobs: batch });
        while self.in_flight.len() > IN_FLIGHT {
            self.answer_oldest(jobs)?;
        }
        Ok(())
    }

    fn answer_oldest(&mut self, jobs: &[Job]) -> Result<()> {
        let Some(sent) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let reply = self.c.read_answer(&sent.tag)?;
        if reply.status.status == crate::imap::Status::Ok {
            self.sum.appended += sent.jobs.len() as u64;
            self.sum.bytes += sent.jobs.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
            return Ok(());
        }
        if sent.jobs.len() == 1 {
            let (i, _) = &sent.jobs[0];
            let e = self.c.refused(&reply.status);
            self.sum
                .fail(&jobs[*i].folder, Some(&jobs[*i].record), e.to_string());
            return Ok(());
        }
        // One message spoilt the batch (MULTIAPPEND is all or nothing): once the rest
        // of what is in flight is answered, append its messages one by one.
        while !self.in_flight.is_empty() {
            self.answer_oldest(jobs)?;
        }
        for (i, bytes) in &sent.jobs {
            self.append_one(jobs, *i, bytes)?;
        }
        Ok(())
    }

    fn append_one(&mut self, jobs: &[Job], i: usize, bytes: &[u8]) -> Result<()> {
        let r = &jobs[i].record;
        let flags = imap_flags(r);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        match self
            .c
            .append(&jobs[i].folder, &flags, Some(r.internaldate), bytes)
        {
            Ok(_) => {
                self.sum.appended += 1;
                self.sum.bytes += bytes.len() as u64;
            }
            Err(e) if is_command_error(&e) => {
                self.sum.fail(&jobs[i].folder, Some(r), e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn finish(&mut self, jobs: &[Job]) -> Result<()> {
        self.send_open(jobs)?;
        while !self.in_flight.is_empty() {
            self.answer_oldest(jobs)?;
        }
        Ok(())
    }
}

/// A NO/BAD for this command (the session is fine) rather than a lost connection.
fn is_command_error(e: &crate::imap::ImapError) -> bool {
    matches!(
        e.kind,
        crate::imap::ImapErrorKind::No | crate::imap::ImapErrorKind::Bad
    )
}
