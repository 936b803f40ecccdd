// Integration tests: one crate. (being written)

mod cyrus_index; // cyrus.index / cyrus.cache against files written by real Cyrus
