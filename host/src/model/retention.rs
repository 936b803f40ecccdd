//! Retention events: the JSON of `retention/<seq>.json` entries in the archive
//! (`doc/retention.md`). An archive keeps one per hold, release, erasure and prune, so
//! the archive alone says what was held, erased or pruned, when and why — without the
//! content of anything erased. `reindex` rebuilds the catalog's `retention_events` and
//! `erased_messages` tables from them.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::cyrus::{Guid, ParseError, ParseErrorKind};

/// Version of the event JSON ([`RetentionEvent::format`]). Readers refuse higher.
pub const RETENTION_FORMAT: u32 = 1;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A legal hold was placed: prune and forget are refused while it lasts.
    Hold,
    /// A hold (or every hold) was released.
    Release,
    /// Messages were erased on request (`cyrvault forget`).
    Erase,
    /// Runs were pruned by a policy (and, with `--keep-deleted`, old deleted content
    /// erased).
    Prune,
}

impl EventKind {
    /// The name used in the catalog and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Hold => "hold",
            EventKind::Release => "release",
            EventKind::Erase => "erase",
            EventKind::Prune => "prune",
        }
    }
}

/// One erased message: its GUID and size, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedMessage {
    /// The message's GUID (SHA-1 of the bytes that are gone).
    #[serde(with = "super::guid_hex")]
    pub guid: Guid,
    /// Its size in bytes.
    pub size: u64,
}

/// A folder taken out of every run's history (forgotten, or deleted longer ago than
/// `--keep-deleted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedFolder {
    /// Its Cyrus UniqueID.
    pub uniqueid: String,
    /// Its last name.
    pub name: String,
}

/// How one message is erased, as the catalog and every run applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Its size in bytes.
    pub size: u64,
    /// The last run when it was erased.
    pub up_to_run: u64,
    /// Erased for good (`forget`): in no run's records, before or after, and never
    /// stored again. Otherwise expired (`--keep-deleted`): out of the runs up to
    /// `up_to_run`; after them an expunged copy is still left out (never fetched
    /// again), but if a later run sees the message visible again (`unexpunge`,
    /// delivered anew) it is backed up again.
    pub permanent: bool,
}

impl Erasure {
    /// Whether a record of an erased message stays in a snapshot written by
    /// `snapshot_run` (`expunged`: the record carries Cyrus's EXPUNGED bit).
    pub fn keeps(&self, snapshot_run: u64, expunged: bool) -> bool {
        !self.permanent && snapshot_run > self.up_to_run && !expunged
    }
}

/// `retention/<seq>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionEvent {
    /// [`RETENTION_FORMAT`].
    pub format: u32,
    /// Event number in this archive: 1, 2, ... (the entry name's number).
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// Unix seconds.
    pub at: i64,
    /// Why (the operator's `--reason`, or the policy in words for a prune).
    pub reason: String,
    /// cyrvault version that wrote it.
    pub tool_version: String,
    /// A hold: when it ends by itself (`None`: when released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// A release: the hold (its `seq`) it ends; `None`: every hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<u64>,
    /// Erase/prune: the last run at the time (see [`Erasure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_run: Option<u64>,
    /// Erase/prune: messages whose bytes left the archive although a kept run listed
    /// them: forgotten (an `erase` event: for good), or expunged/deleted longer ago
    /// than `--keep-deleted` (a `prune` event). See [`Erasure`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erased: Vec<ErasedMessage>,
    /// Prune: the runs removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_removed: Vec<u64>,
    /// Erase/prune: folders taken out of every run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders_removed: Vec<RemovedFolder>,
    /// Erase/prune: archive bytes before and after.
    #[serde(default)]
    pub bytes_before: u64,
    #[serde(default)]
    pub bytes_after: u64,
}

impl RetentionEvent {
    /// The JSON the archive stores.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The event without its `erased` list (the catalog keeps that list as rows of
    /// `erased_messages`), as compact JSON: what `retention_events.event` holds.
    pub fn summary_json(&self) -> String {
        let mut s = self.clone();
        s.erased.clear();
        serde_json::to_string(&s).unwrap_or_default()
    }
}

/// Decode an event, refusing formats newer than [`RETENTION_FORMAT`].
pub fn parse_event(bytes: &[u8]) -> std::result::Result<RetentionEvent, ParseError> {
    let e: RetentionEvent = serde_json::from_slice(bytes).map_err(|e| {
        ParseError::invalid(
            "retention event",
            e.column() as u64,
            format!("bad JSON: {e}"),
        )
    })?;
    if e.format > RETENTION_FORMAT || e.format == 0 {
        return Err(ParseError::new(
            "retention event",
            0,
            ParseErrorKind::UnsupportedVersion {
                found: u64::from(e.format),
                supported: "1",
            },
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trip_and_version() {
        let e = RetentionEvent {
            format: RETENTION_FORMAT,
            seq: 3,
            kind: EventKind::Erase,
            at: 1_700_000_000,
            reason: "GDPR request 42".into(),
            tool_version: "0.1.0".into(),
            until: None,
            releases: None,
            up_to_run: Some(7),
            erased: vec![ErasedMessage {
                guid: Guid::of(b"x"),
                size: 1,
            }],
            runs_removed: vec![],
            folders_removed: vec![],
            bytes_before: 10,
            bytes_after: 5,
        };
        assert_eq!(parse_event(&e.to_json()).unwrap(), e);
        assert!(!e.summary_json().contains(&Guid::of(b"x").to_hex()));
        let mut newer = e.clone();
        newer.format = 2;
        assert!(parse_event(&newer.to_json()).is_err());
    }
}
