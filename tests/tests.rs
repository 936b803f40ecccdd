// Integration tests: one crate. (being written)
