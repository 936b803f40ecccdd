//! cyrvault: a backup system for Cyrus IMAP servers.
//!
//! Two halves share this crate:
//! - the lock-and-stream service (`service`, `ffi`), started by Cyrus's `master`
//!   on every IMAP server; it reads Cyrus's files under Cyrus's own locks;
//! - the backup server and admin tools (the `cyrvault` binary), which pull from
//!   the service into per-user archives and restore from them.
//!
//! `cyrus` owns the byte layouts of Cyrus's files (pure parsers and writers),
//! `lock` owns every fcntl lock, `imap` is a small IMAP client (restore and the
//! test sandbox), `sandbox` starts a private real Cyrus for tests and demos,
//! `secret` and `tls` are what both halves use to trust each other (doc/security.md).
//! See `doc/design.md`.

pub mod admin;
pub mod archive;
pub mod backup;
pub mod catalog;
pub mod cyrus;
pub mod error;
pub mod ffi;
pub mod fleet;
pub mod imap;
pub mod inspect;
pub mod lock;
pub mod log;
pub mod model;
pub mod protocol;
pub mod replication;
pub mod restore;
pub mod retention;
pub mod sandbox;
pub mod secret;
pub mod service;
pub mod spool;
pub mod time;
pub mod tls;
pub mod vault;

pub use error::{Error, ErrorKind, Result};
