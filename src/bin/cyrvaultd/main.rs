//! `cyrvaultd`: the service Cyrus's master starts (being written).
fn main() {}
