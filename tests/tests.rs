// Integration tests: one crate.
mod cyrus_paths; // cyrus::paths vs the real `mbpath -j`; the Scratch Cyrus config helper
mod lock; // lock.rs vs real Cyrus tools (mbexamine, reconstruct) holding/awaiting locks
