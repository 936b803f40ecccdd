//! cyrvault: a backup system for Cyrus IMAP servers. This crate is its service half,
//! what runs on every IMAP server: the lock-and-stream service (`service`, `ffi`),
//! started by Cyrus's `master` as `cyrvaultd` or linked into Cyrus as
//! `libcyrvault.a`; it reads Cyrus's files under Cyrus's own locks.
//!
//! The backup host (archives, catalog, backup, restore, the `cyrvault` binary) is the
//! `cyrvault-host` crate in `host/`, which builds on this one; the test sandbox is
//! `cyrvault-testkit` in `testkit/`. Nothing of either is linked into this crate.
//!
//! `cyrus` owns the byte layouts of Cyrus's files (pure parsers and writers),
//! `lock` owns every fcntl lock, `spool` reads one server's files under those locks,
//! `protocol` is the wire format both halves speak, `secret` and `tls` are what both
//! halves use to trust each other (doc/security.md). See `doc/design.md`.

pub mod cyrus;
pub mod error;
pub mod ffi;
pub mod inspect;
pub mod io_error;
pub mod kind;
pub mod lock;
pub mod log;
pub mod protocol;
pub mod secret;
pub mod service;
pub mod spool;
pub mod time;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
