// Integration tests: one crate. (being written)
mod sandbox;
