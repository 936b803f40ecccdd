// Integration tests: one crate. (being written)

mod archive;
mod cyrus_index; // cyrus.index / cyrus.cache against files written by real Cyrus // the per-user tar.gz: stock tools, crashes, damage, locks, short reads
