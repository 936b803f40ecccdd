//! Quota backed up (issue #12): what the spool reads for a user's quota roots, in
//! Cyrus's default `quotalegacy` backend and in a twoskip `quotas.db`, against Cyrus's
//! own `quota` tool; and the backup storing `user/<run>/quota` again when a limit
//! changes, not when only the usage moves.

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

fn ours(sb: &Sandbox, users: &[&str]) -> Vec<(String, String, i64)> {
    let spool = Spool::open(
        load(Some(&sb.imapd_conf), None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
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
