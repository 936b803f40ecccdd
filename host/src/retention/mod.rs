//! Retention: archives that do not grow forever (`doc/retention.md`).
//!
//! * `policy.rs` — which runs a `--keep-*` policy keeps (restic's vocabulary and
//!   semantics), and `--keep-deleted`;
//! * `plan.rs` — from the catalog alone, what a compaction keeps: runs, messages,
//!   folder snapshots, user files, and per member: copy, re-pack, drop or inspect;
//! * `compact.rs` — carry a plan out: the new archive beside the old one (whole
//!   members copied byte for byte), its catalog built by the replay calls, the swap;
//! * `pair.rs` — the archive and catalog as a pair across a swap: generations,
//!   finishing an interrupted swap, what a reader opens;
//! * `prune.rs`, `forget.rs`, `hold.rs` — the three commands;
//! * `error.rs` — [`RetentionError`].
//!
//! The archive stays the truth: every prune, erasure and hold is a `retention/<seq>.json`
//! entry in it (`model::retention`), and `reindex` rebuilds the catalog, retention
//! included, from the archive alone.
#![forbid(unsafe_code)]

mod compact;
mod error;
mod forget;
mod hold;
pub mod pair;
mod plan;
pub mod policy;
mod prune;

pub use compact::CompactReport;
pub use error::{Result, RetentionError};
pub use forget::{ERASURES_LOG, ForgetOptions, ForgetReport, ForgetWhat, forget};
pub use hold::{HoldInfo, Target, active_holds, hold, holds_of, release};
pub use plan::{Action, Plan};
pub use policy::{Count, Decision, Policy, RunTime};
pub use prune::{PruneOptions, PruneReport, prune};

/// Unix seconds as RFC 3339 in UTC (`2026-11-29T21:51:56Z`), for messages.
pub(crate) fn rfc3339(t: i64) -> String {
    let (days, s) = crate::time::split_unix(t);
    let (y, m, d) = crate::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}
