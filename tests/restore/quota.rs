//! Quota backed up (issue #12): what the spool reads for a user's quota roots, in
//! Cyrus's default `quotalegacy` backend and in a twoskip `quotas.db`, against Cyrus's
//! own `quota` tool; what a twoskip lookup reads of a big `quotas.db`, in bytes; and
//! the backup storing `user/<run>/quota` again when a limit changes, not when only the
//! usage moves.

use std::path::Path;
use std::time::Duration;

use cyrvault::cyrus::config::load;
use cyrvault::cyrus::quota::parse_quota_file;
use cyrvault::spool::Spool;
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions, ServiceLine};

use super::must_show::{backup, work};

fn start(hint: &str, backend: Option<&str>) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        extra_services: vec![ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        extra_imapd_conf: backend
            .map(|b| vec![("quota_db".to_string(), b.to_string())])
            .unwrap_or_default(),
        ..SandboxOptions::default()
    })
    .unwrap()
}

/// `quota` (Cyrus's tool) as (root, resource, limit in Cyrus's units) rows.
fn cyrus_quota(sb: &Sandbox) -> Vec<(String, String, i64)> {
    let out = sb.tool_ok("quota", &[]).unwrap();
    let mut rows = Vec::new();
    // "   Quota   % Used     Used Resource Root"
    for l in out.lines().skip(1) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if let [limit, _, _, res, root] = w[..] {
            rows.push((root.to_string(), res.to_string(), limit.parse().unwrap()));
        }
    }
    rows.sort();
    rows
}

fn spool(sb: &Sandbox) -> Spool {
    Spool::open(
        load(Some(&sb.imapd_conf), None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn ours(sb: &Sandbox, users: &[&str]) -> Vec<(String, String, i64)> {
    let spool = spool(sb);
    let ml = spool.mboxlist().unwrap();
    let mut rows = Vec::new();
    for u in users {
        let file = spool.user_quota(u, &ml).unwrap();
        for (root, v) in parse_quota_file(&file).unwrap() {
            for (res, limit) in v.imap_limits() {
                rows.push((root.clone(), res.to_string(), limit));
            }
        }
    }
    rows.sort();
    rows
}

#[test]
fn quota_read_like_cyrus_and_stored_on_limit_changes() {
    for backend in [None, Some("twoskip")] {
        let sb = start("quota", backend);
        let mut admin = sb.admin().unwrap();
        for u in ["alice", "bob", "carol"] {
            admin.create(&format!("user.{u}")).unwrap();
        }
        admin.create("user.bob.Big").unwrap();
        admin
            .setquota("user.alice", &[("STORAGE", 1000), ("MESSAGE", 50)])
            .unwrap();
        admin.setquota("user.bob.Big", &[("STORAGE", 777)]).unwrap();
        admin.logout().unwrap();
        let want = cyrus_quota(&sb);
        assert_eq!(want.len(), 3, "{want:?}");
        assert_eq!(
            ours(&sb, &["alice", "bob", "carol"]),
            want,
            "backend {backend:?}"
        );
        assert!(ours(&sb, &["carol"]).is_empty());
        // Every backend's read is counted in the spool's figures.
        let sp = spool(&sb);
        let ml = sp.mboxlist().unwrap();
        let before = sp.db_reads();
        sp.user_quota("alice", &ml).unwrap();
        let after = sp.db_reads();
        assert_eq!(after.quota_db, before.quota_db + 1, "backend {backend:?}");
        assert!(
            after.quota_db_bytes > before.quota_db_bytes,
            "backend {backend:?}"
        );
        if backend == Some("twoskip") {
            a_big_quotas_db_costs_an_owner_no_more(&sb);
        }
    }

    // The backup: stored on the first run, not again for new mail, again for a new limit.
    let w = work("quota");
    let sb = start("quotab", None);
    let mut admin = sb.admin().unwrap();
    admin.create("user.dave").unwrap();
    admin.setquota("user.dave", &[("STORAGE", 5000)]).unwrap();
    admin.logout().unwrap();
    let stored = |run: u64| {
        let ua = cyrvault_host::vault::Vault::open(&w.vault)
            .unwrap()
            .user("dave")
            .unwrap()
            .unwrap();
        let cat = cyrvault_host::catalog::Catalog::open_existing(&ua.catalog).unwrap();
        cat.user_files_at(run)
            .unwrap()
            .into_iter()
            .find(|(_, f, _)| f.name == "quota")
            .map(|(snapshot, _, _)| snapshot)
    };
    assert_eq!(backup(&sb, &w.vault, "dave"), 1);
    assert_eq!(stored(1), Some(1));
    sb.append("dave", None, &[], None, b"Subject: x\r\n\r\nmore mail\r\n")
        .unwrap();
    assert_eq!(backup(&sb, &w.vault, "dave"), 2);
    assert_eq!(stored(2), Some(1), "usage alone is not a change");
    let mut admin = sb.admin().unwrap();
    admin.setquota("user.dave", &[("STORAGE", 6000)]).unwrap();
    admin.logout().unwrap();
    assert_eq!(backup(&sb, &w.vault, "dave"), 3);
    assert_eq!(stored(3), Some(3), "a new limit is stored");
}

/// `user.bob`'s quota in a twoskip quotas.db (issue 10's measure, as
/// `listing::a_big_server_costs_an_owner_no_more` takes it for mailboxes.db): the
/// bytes the spool's lookups read, counted by its own figures, before and after
/// Cyrus's own `cyr_dbtool` adds 8,000 other quota roots (~800 KB). The lookup (one per root
/// under the shared lock, read in place) must not grow with the file; a copy or a walk
/// of the whole file fails. Cyrus's `quota` tool reads the grown file too, and bob's
/// rows in it equal ours.
fn a_big_quotas_db_costs_an_owner_no_more(sb: &Sandbox) {
    let bob = |sp: &Spool| {
        let ml = sp.mboxlist().unwrap();
        let before = sp.db_reads();
        let file = sp.user_quota("bob", &ml).unwrap();
        let after = sp.db_reads();
        // bob's two folders are two lookups; only user.bob.Big has a quota
        assert_eq!(parse_quota_file(&file).unwrap().len(), 1, "user.bob.Big");
        assert_eq!(
            after.quota_db,
            before.quota_db + 1,
            "one lock-and-lookup pass"
        );
        after.quota_db_bytes - before.quota_db_bytes
    };
    let sp = spool(sb);
    let db = sp.conf().quota_db_path();
    let small = bob(&sp);
    let small_size = std::fs::metadata(&db).unwrap().len();

    let mut roots = String::new();
    for i in 0..8000 {
        roots.push_str(&format!(
            "user.q{i:05}\t%(S (0 {}) M (0 50) AS (0) NF (1) MODSEQ 1)\n",
            1000 + i
        ));
    }
    dbtool_set(sb, &db, roots.as_bytes());
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 500 * 1024, "quotas.db is {size} bytes");
    let want: Vec<_> = cyrus_quota(sb)
        .into_iter()
        .filter(|(root, _, _)| root.starts_with("user.bob"))
        .collect();
    assert_eq!(ours(sb, &["bob"]), want);

    let big = bob(&spool(sb));
    eprintln!(
        "quota of bob: read {big} of {size} bytes of quotas.db ({small} of {small_size} before)"
    );
    assert!(small > 0 && big > 0, "the lookups were not counted");
    // Two lookups of O(log n) records, each fetched with a 1 KiB read-ahead: 10-24 KiB
    // here. Cyrus draws the skip levels at random, so the bound leaves room; a copy
    // or a walk of the file reads it all.
    assert!(
        big < 64 * 1024 && big * 10 < size,
        "read {big} of {size} bytes of quotas.db ({small} before it grew)"
    );
}

/// `cyr_dbtool <db> twoskip set` with `key TAB value LF` lines on stdin: Cyrus's own
/// writer adds them (under eatmydata: the file is the same, the fsyncs are skipped).
fn dbtool_set(sb: &Sandbox, db: &Path, lines: &[u8]) {
    let args = [db.as_os_str(), "twoskip".as_ref(), "set".as_ref()];
    crate::listing::cyrus_tool_fed(sb, "cyr_dbtool", &args, lines);
}
