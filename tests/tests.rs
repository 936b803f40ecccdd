//! Integration tests: one crate (see STYLE.md). Each module tests one noun against
//! real Cyrus: its files, its tools, its running server.

mod cyrus_index; // cyrus.index / cyrus.cache against files written by real Cyrus
mod cyrus_paths; // cyrus::paths vs the real `mbpath -j`; the Scratch Cyrus config helper
mod lock; // lock.rs vs real Cyrus tools (mbexamine, reconstruct) holding/awaiting locks

// mailboxes.db, twoskip, cyrus.header and flat db against real Cyrus 3.6 files and tools.
mod cyrus_mboxlist; // DList, cyrus.header, twoskip, mailboxes.db, flat vs cyr_dbtool / ctl_mboxlist -d

mod ffi_c;
mod header;
mod master;

mod sandbox; // the private real Cyrus on loopback and the IMAP client against it
mod spool; // spool.rs against the real sandbox
