// Integration tests: one crate. (being written)

// mailboxes.db, twoskip, cyrus.header and flat db against real Cyrus 3.6 files and tools.
mod cyrus_mboxlist;
