//! Legal hold: `cyrvault hold USER [--until DATE] --reason TEXT` and `--release`.
//!
//! A hold is a `retention/<seq>.json` event appended to the archive in a member of its
//! own (fsynced, then recorded in the catalog), so it survives the catalog and is
//! rebuilt by `reindex`. The next backup adopts that member like any member written
//! after the last run. While a hold lasts (not released, `until` not passed), prune and
//! forget refuse the user.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::{Result, RetentionError};
use super::pair;
use crate::archive::{self, ArchiveWriter, EntryName, Members, WriterOptions};
use crate::catalog::{Catalog, RetentionRow};
use crate::io_error::IoContext;
use crate::model::EntryLoc;
use crate::model::retention::{EventKind, RETENTION_FORMAT, RetentionEvent, parse_event};

/// One user's archive and catalog, as retention addresses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The user's name (for messages and reports).
    pub user: String,
    pub archive: PathBuf,
    pub catalog: PathBuf,
}

/// A hold in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldInfo {
    /// The event number (what `--release --id` names).
    pub seq: u64,
    /// When it was placed (Unix seconds).
    pub at: i64,
    pub reason: String,
    /// When it ends by itself (`None`: when released).
    pub until: Option<i64>,
}

impl HoldInfo {
    /// One line for messages: `hold 3 (until 2027-01-01T00:00:00Z): litigation X`.
    pub fn describe(&self) -> String {
        let until = self.until.map_or_else(
            || "until released".to_string(),
            |u| format!("until {}", super::rfc3339(u)),
        );
        format!("hold {} ({until}): {}", self.seq, self.reason)
    }
}

/// The holds in force at `now` among `events` (oldest first).
pub fn active_holds(events: &[RetentionRow], now: i64) -> Vec<HoldInfo> {
    let mut holds: Vec<HoldInfo> = Vec::new();
    for e in events {
        match e.kind.as_str() {
            "hold" => holds.push(HoldInfo {
                seq: e.seq,
                at: e.at,
                reason: e.reason.clone(),
                until: e.until,
            }),
            "release" => match e.releases {
                Some(s) => holds.retain(|h| h.seq != s),
                None => holds.clear(),
            },
            _ => {}
        }
    }
    holds.retain(|h| h.until.is_none_or(|u| u > now));
    holds
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Where the catalog's committed part of the archive ends (its last member's end).
pub(crate) fn committed_end(cat: &Catalog) -> Result<u64> {
    Ok(cat
        .audit_members()?
        .iter()
        .filter_map(|m| {
            let o = u64::try_from(m.offset).ok()?;
            o.checked_add(u64::try_from(m.compressed_len).ok()?)
        })
        .max()
        .unwrap_or(0))
}

/// What the archive holds past the catalog's committed part.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Runs committed in the archive the catalog lacks.
    pub runs: Vec<u64>,
    /// The highest retention event number there.
    pub max_seq: u64,
}

/// Read the members past the catalog's end: retention events there that the catalog
/// lacks (a hold whose catalog write a crash cut off: the archive has it, so it holds)
/// are added to the catalog; manifests there are reported (the catalog is behind).
pub(crate) fn absorb_tail(cat: &mut Catalog, archive: &Path) -> Result<Tail> {
    let end = committed_end(cat)?;
    let mut out = Tail::default();
    let have: Vec<u64> = cat.retention_events()?.iter().map(|e| e.seq).collect();
    out.max_seq = have.iter().copied().max().unwrap_or(0);
    let file = std::fs::File::open(archive).at("opening", archive)?;
    {
        use std::io::{Seek, SeekFrom};
        let mut f = &file;
        f.seek(SeekFrom::Start(end)).at("seeking in", archive)?;
    }
    let mut found = Vec::new();
    for m in Members::at(&file, end, archive) {
        let Ok(m) = m else { break };
        for e in &m.entries {
            match archive::parse_entry_name(&e.name) {
                EntryName::RunManifest { run } => {
                    out.runs.extend(run.parse::<u64>().ok());
                }
                EntryName::Retention { seq } => {
                    let seq: u64 = seq.parse().unwrap_or(0);
                    out.max_seq = out.max_seq.max(seq);
                    if !have.contains(&seq) {
                        found.push((m.offset, e.offset_in_member, e.size));
                    }
                }
                _ => {}
            }
        }
    }
    let mut f = std::fs::File::open(archive).at("opening", archive)?;
    for (member, off, size) in found {
        let bytes = archive::read_entry_at(&mut f, archive, member, off, size)?;
        let ev = parse_event(&bytes).map_err(|e| RetentionError::parse(archive, e))?;
        log::warn!(
            target: "cyrvault::retention",
            "{}: retention event {} ({}) is in the archive but was not in the catalog: added",
            archive.display(),
            ev.seq,
            ev.kind.as_str()
        );
        cat.add_retention_event(
            &ev,
            &EntryLoc {
                member_offset: member,
                offset_in_member: off,
                size,
            },
        )?;
    }
    Ok(out)
}

/// Open the archive for appending, waiting up to `wait` while another writer holds it.
fn open_writer(archive: &Path, committed: u64, wait: Option<Duration>) -> Result<ArchiveWriter> {
    let deadline = wait.map(|w| Instant::now() + w);
    loop {
        let opts = WriterOptions {
            committed_len: Some(committed),
            ..WriterOptions::default()
        };
        match ArchiveWriter::open_with(archive, opts) {
            Err(e) if e.is_temporary() && deadline.is_some_and(|d| Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return Ok(r?),
        }
    }
}

/// Append one event to the archive (its own member, fsynced) and then to the catalog.
fn append_event(
    t: &Target,
    wait: Option<Duration>,
    make: impl FnOnce(u64) -> RetentionEvent,
) -> Result<RetentionEvent> {
    if !t.archive.exists() {
        return Err(RetentionError::not_found(
            "archive",
            format!("{} ({})", t.user, t.archive.display()),
        ));
    }
    pair::settle(&t.archive, &t.catalog, wait)?;
    let mut cat = Catalog::open_existing(&t.catalog)?;
    let committed = committed_end(&cat)?;
    let mut w = open_writer(&t.archive, committed, wait)?;
    pair::check_same_generation(&cat, &t.archive)?;
    let tail = absorb_tail(&mut cat, &t.archive)?;
    let ev = make(tail.max_seq + 1);
    w.add(
        &archive::retention_entry(ev.seq),
        &ev.to_json(),
        u64::try_from(ev.at).unwrap_or(0),
    )?;
    let written = w.finish_member()?;
    let (m, e) = written
        .iter()
        .find_map(|m| m.entries.first().map(|e| (m, e)))
        .ok_or_else(|| RetentionError::other("the event member was not written".into()))?;
    cat.add_retention_event(&ev, &m.locate(e))?;
    Ok(ev)
}

/// Place a legal hold on `t` until `until` (or until released) for `reason`.
pub fn hold(
    t: &Target,
    until: Option<i64>,
    reason: &str,
    wait: Option<Duration>,
) -> Result<HoldInfo> {
    if reason.trim().is_empty() {
        return Err(RetentionError::refused("a hold needs a --reason".into()));
    }
    let now = now_secs();
    if until.is_some_and(|u| u <= now) {
        return Err(RetentionError::refused("--until is in the past".into()));
    }
    let ev = append_event(t, wait, |seq| RetentionEvent {
        format: RETENTION_FORMAT,
        seq,
        kind: EventKind::Hold,
        at: now,
        reason: reason.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        until,
        releases: None,
        up_to_run: None,
        erased: Vec::new(),
        runs_removed: Vec::new(),
        folders_removed: Vec::new(),
        bytes_before: 0,
        bytes_after: 0,
    })?;
    Ok(HoldInfo {
        seq: ev.seq,
        at: ev.at,
        reason: ev.reason,
        until: ev.until,
    })
}

/// Release hold `which` (its number), or every hold, of `t`. Refused when there is no
/// such hold in force.
pub fn release(
    t: &Target,
    which: Option<u64>,
    reason: &str,
    wait: Option<Duration>,
) -> Result<Vec<HoldInfo>> {
    let now = now_secs();
    let active = {
        let cat = Catalog::open_read_only(&pair::catalog_to_read(&t.archive, &t.catalog))?;
        active_holds(&cat.retention_events()?, now)
    };
    let released: Vec<HoldInfo> = active
        .into_iter()
        .filter(|h| which.is_none_or(|s| s == h.seq))
        .collect();
    if released.is_empty() {
        return Err(RetentionError::refused(match which {
            Some(s) => format!("{}: no hold {s} in force", t.user),
            None => format!("{}: no hold in force", t.user),
        }));
    }
    append_event(t, wait, |seq| RetentionEvent {
        format: RETENTION_FORMAT,
        seq,
        kind: EventKind::Release,
        at: now,
        reason: if reason.trim().is_empty() {
            "released".to_string()
        } else {
            reason.to_string()
        },
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        until: None,
        releases: which,
        up_to_run: None,
        erased: Vec::new(),
        runs_removed: Vec::new(),
        folders_removed: Vec::new(),
        bytes_before: 0,
        bytes_after: 0,
    })?;
    Ok(released)
}

/// The holds in force on `t` now (reading the catalog a reader should read).
pub fn holds_of(t: &Target) -> Result<Vec<HoldInfo>> {
    let cat = Catalog::open_read_only(&pair::catalog_to_read(&t.archive, &t.catalog))?;
    Ok(active_holds(&cat.retention_events()?, now_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, kind: &str, until: Option<i64>, releases: Option<u64>) -> RetentionRow {
        RetentionRow {
            seq,
            kind: kind.into(),
            at: 0,
            reason: format!("r{seq}"),
            until,
            releases,
            up_to_run: None,
            event: String::new(),
            loc: EntryLoc {
                member_offset: 0,
                offset_in_member: 0,
                size: 0,
            },
        }
    }

    #[test]
    fn holds_end_by_release_or_by_date() {
        let ev = [
            row(1, "hold", None, None),
            row(2, "hold", Some(100), None),
            row(3, "prune", None, None),
        ];
        assert_eq!(active_holds(&ev, 50).len(), 2);
        assert_eq!(active_holds(&ev, 100).len(), 1, "until passed");
        let mut ev2 = ev.to_vec();
        ev2.push(row(4, "release", None, Some(1)));
        assert_eq!(
            active_holds(&ev2, 50)
                .iter()
                .map(|h| h.seq)
                .collect::<Vec<_>>(),
            [2]
        );
        ev2.push(row(5, "release", None, None));
        assert!(active_holds(&ev2, 50).is_empty());
        ev2.push(row(6, "hold", None, None));
        assert_eq!(active_holds(&ev2, 50).len(), 1);
    }
}
