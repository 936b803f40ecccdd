//! A mailbox's meta files: cyrus.index (header and records, every supported minor
//! version), cyrus.header, and cyrus.cache entries checked against index records.
//! The first byte picks the file.

use cyrvault::cyrus::{cache, header, index};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((which, file)) = data.split_first() else {
            return;
        };
        match which % 3 {
            0 => {
                let _ = index::parse_header(file);
                let _ = index::parse_index(file);
            }
            1 => {
                let _ = header::parse_header(file);
            }
            _ => {
                // a cache file and an index whose records point into it
                let cut = usize::from(file.first().copied().unwrap_or(0)) * 16;
                let (idx, cache_file) = file.split_at(cut.min(file.len()));
                let _ = cache::parse_cache_generation(cache_file);
                for off in [0u64, 4, 8, 64] {
                    let _ = cache::parse_cache_entry(cache_file, off);
                }
                if let Ok(i) = index::parse_index(idx) {
                    for r in &i.records {
                        let _ = cache::check_record(cache_file, r);
                    }
                }
            }
        }
    });
}
