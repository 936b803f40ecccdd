//! Integration tests: one crate (see STYLE.md). Each module tests one noun against
//! real Cyrus: its files, its tools, its running server.

mod admin; // list/show/ls/cat/verify/reindex/stats on archives of a real spool: reindex equality, damage, tar, one-member cat
mod archive; // the per-user tar.gz: stock tools, crashes, damage, locks, short reads, kill -9
mod backup; // cyrvault backup vs real Cyrus + cyrvaultd under master: round trip, history, dedup, incremental, kill -9
mod bins; // where target/<profile>/cyrvault (the host package's binary) and cyrvaultd are
mod catalog; // the SQLite catalog: history per run, reindex equality, schema checks, records_from_meta vs mbexamine
mod certs; // test certificates made by each test (rcgen): CA, server certificate, an unrelated CA
mod crates; // issue 15: the service crate depends on no backup-host crate; libcyrvault.a has no sqlite3_/tokio/postgres symbol
mod cyrus313; // a spool written by a real Cyrus 3.13 (../shared/fixtures): parsers and cyrvaultd -X vs its own ctl_mboxlist/mbexamine
mod cyrus_index; // cyrus.index / cyrus.cache against files written by real Cyrus
mod cyrus_mboxlist; // DList, cyrus.header, twoskip, mailboxes.db, flat vs cyr_dbtool / ctl_mboxlist -d
mod cyrus_paths; // cyrus::paths vs the real `mbpath -j`; the Scratch Cyrus config helper
mod cyrus_versions; // per_cyrus!: tests run on Cyrus 3.6 and 3.10; release detection and lock naming per release
mod every_folder; // issue 9: `..` names, delayed-delete folders, shared hierarchies, damaged folders: backed up or the run fails
mod exit_codes; // issue 11: failures retrying cannot fix exit 65/77/78, never 75; the session line counts them
mod ffi_c; // the C harness: include/cyrvault.h + libcyrvault.a driven over a socketpair
mod fleet; // issue 6: discover, run with N worker processes (kill -9, locks, retry), SQLite and a real PostgreSQL
mod folder_load; // issue 10: FDATA reads only its records and no annotations.db; spilled FMETA copies
mod foundation; // issue 2 end to end: inspect vs mbexamine/ctl_mboxlist, write-back, lock interop, damage
mod header; // committed include/cyrvault.h == what cbindgen generates
mod layers; // issue 15: doc/design.md's layer tables == the modules' imports, no cycles
mod listing; // issue 10: the service's per-owner range reads of mailboxes.db/annotations.db vs whole-file parses, repack, cache
mod lock; // lock.rs vs real Cyrus tools (mbexamine, reconstruct) holding/awaiting locks
mod master; // cyrvaultd under Cyrus's real master, and in master's seat
mod mbexamine; // shared oracle: parsers for mbexamine and unexpunge -l output
mod noloss; // issue 9: failed folders carry their state forward (rename race, churn), verify both ways, reindex refuses damage, racy on the server's clock
mod ops; // issue 15: man pages from the clap definition render cleanly, hand-written pages match the parsers, completions
mod prerequisite; // a test whose prerequisite is missing fails, unless CYRVAULT_ALLOW_SKIP=1
mod protocol; // the wire protocol: transcripts of every base command, codec round trips
mod restore; // cyrvault restore vs real Cyrus: round trip, point in time, kill and rerun, exports read by Python, damage, single message
mod retention; // issue 14: prune by policy (30 daily runs), compaction crash-safe under kill -9 and beside a backup, forget leaves no byte, legal hold
mod sandbox; // the private real-Cyrus sandbox, the IMAP client, the mail generator
mod scale; // issue 10, backup host: unchanged user = one round trip and no fsync (strace), changed <= 2 fsyncs, no user-file fetch unless changed, --jobs deterministic
mod service; // cyrvaultd under the real master from the shipped snippet: load, lock hold, security, interop
mod spool; // spool: listings, snapshots, locks, user files and annotations vs the real sandbox
