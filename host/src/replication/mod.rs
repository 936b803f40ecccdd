//! The client side of Cyrus's replication protocol (what `sync_client` speaks to
//! `sync_server`), used by the exact restore (`restore::exact`): [`wire`] prints the
//! DList values commands carry, [`client`] runs a session. Cyrus facts (command
//! names, fields, what the server does with them) are in `doc/restore.md`, "Exact
//! restore", with the Cyrus source they come from.
#![forbid(unsafe_code)]

pub mod client;
pub mod wire;

pub use client::{Response, Status, SyncClient};
pub use wire::{Kv, Value};
