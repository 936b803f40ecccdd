//! cyrvault-host: the backup host half of cyrvault. It pulls users from the services
//! (the `cyrvault` crate, one per IMAP server) into one append-only `.tar.gz` per user
//! with a SQLite catalog beside it, restores from them, prunes and holds, and runs a
//! fleet of backup workers; the `cyrvault` binary is its command line.
//!
//! `archive` owns the per-user archive, `catalog` all SQL (derived data, rebuilt by
//! `admin::reindex`), `vault` where each user's pair lives, `backup` one run for a
//! user, `restore` the way back, `retention` prune/forget/hold, `fleet` many servers
//! and workers, `imap` a small IMAP client (restore and the test sandbox), `replication`
//! Cyrus's replication protocol (exact restore). See `doc/design.md`.

// The service layers the host builds on, under the names they have in the service
// crate, so a path reads the same in both halves (`crate::cyrus::Guid`). The arrows
// are checked against doc/design.md by tests/layers.rs like any other.
pub use cyrvault::{cyrus, io_error, lock, protocol, secret, spool, time, tls};

pub mod admin;
pub mod archive;
pub mod backup;
pub mod catalog;
pub mod error;
pub mod fleet;
pub mod imap;
pub mod model;
pub mod replication;
pub mod restore;
pub mod retention;
pub mod vault;

pub use error::{Error, ErrorKind, Result};
