//! `cyrvault`: the admin and backup-server command (being written).
fn main() {}
