//! What a run does with failures it cannot retry away (issue 15 item 6), against a
//! small fleet of its own (three real Cyrus servers, two users each, SQLite
//! directory, `prune_keep_last: 1`, `retry_backoff: 3600`):
//!
//! - a prune that fails after a good backup (an old member of the user's archive
//!   damaged on disk, so compaction cannot re-pack it): the user counts as backed
//!   up, the prune's failure and its class are in the done event, the summary,
//!   `fleet-status` and the metrics, the exit status is 65; nothing of the archive
//!   is lost, and once the damage is gone the next run's prune succeeds;
//! - a permanent failure (a refused secret, 77) beside a temporary one (an archive
//!   locked by another writer, 75): each user is tried once in the round; after the
//!   fix the next run tries the permanent ones at once, while the temporary one
//!   waits for its backoff.

use cyrvault_host::archive::{EntryName, parse_entry_name};

use super::*;

/// `(server, user)` → attempts in `round`, from the directory's `attempts` table.
fn attempts(db: &Path, round: i64) -> BTreeMap<String, i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT server || '/' || userid, COUNT(*) FROM attempts WHERE round = ?1 \
             GROUP BY server, userid",
        )
        .unwrap();
    st.query_map([round], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The user's archive, in whichever vault root it is.
fn user_archive(dir: &Path, user: &str) -> cyrvault_host::vault::UserArchive {
    ["vault-a", "vault-b"]
        .iter()
        .find_map(|v| Vault::open(&dir.join(v)).ok()?.user(user).unwrap())
        .unwrap_or_else(|| panic!("no archive for {user}"))
}

fn run_json(conf: &Path) -> (Option<i32>, Vec<Event>, serde_json::Value, String) {
    let out = cli(&["run", "--workers", "2", "--json"], conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (events, summary) = parse_events(&text);
    (
        out.status.code(),
        events,
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_failed_prune_counts_and_permanent_failures_skip_the_backoff() {
    let f = start_fleet(2, 1, 300);
    let dir = scratch("failures");
    let db = dir.join("vault-a/fleet.db");
    let base = write_conf(
        &f,
        &dir,
        &ConfOpts {
            workers: 2,
            // later lines win: the backoff written above is replaced
            extra: "prune_keep_last: 1\nretry_backoff: 3600\n",
            ..ConfOpts::default()
        },
    );
    ok(cli(&["discover"], &base).output().unwrap());
    let (code, _, summary, err) = run_json(&base);
    assert_eq!(code, Some(0), "{summary:#}\n{err}");
    assert_eq!(summary["ok"], 6, "{summary:#}");

    // 1. New mail for the victim, and its first data member damaged on disk (bit rot
    //    in a member the catalog accounts for: the backup appends after it and does
    //    not read it; the prune must re-pack it to drop run 1).
    let (vserver, victim) = ("s1", "u1x000");
    let sb = &f.sbs[0];
    let m = MailGen::new(77).message_of_size(2_000);
    lmtp::deliver(sb.lmtp_addr, &sb.servername, &[victim], &m.bytes).unwrap();
    let ua = user_archive(&dir, victim);
    let s = scan(&ua.archive).unwrap();
    assert!(s.damage.is_empty());
    let member = s
        .members
        .iter()
        .find(|m| {
            m.entries
                .iter()
                .any(|e| matches!(parse_entry_name(&e.name), EntryName::Message(_)))
        })
        .expect("a member with messages")
        .clone();
    let mut bytes = std::fs::read(&ua.archive).unwrap();
    let original = bytes.clone();
    let mid = (member.offset + member.compressed_len / 2) as usize;
    for b in &mut bytes[mid - 16..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&ua.archive, &bytes).unwrap();
    let runs_before = Catalog::open_read_only(&ua.catalog)
        .unwrap()
        .runs()
        .unwrap()
        .len();
    assert_eq!(runs_before, 1);

    let (code, events, summary, err) = run_json(&base);
    // The backup is good, the prune is not: 65 (data), the class of the damage.
    assert_eq!(code, Some(65), "{summary:#}\n{err}");
    assert_eq!(summary["worst_class"], "data", "{summary:#}");
    assert_eq!(
        (&summary["ok"], &summary["failed"], &summary["prune_failed"]),
        (
            &serde_json::json!(6),
            &serde_json::json!(0),
            &serde_json::json!(1)
        ),
        "{summary:#}"
    );
    let pf = summary["prune_failures"].as_array().unwrap();
    assert_eq!(pf.len(), 1, "{summary:#}");
    assert_eq!(pf[0]["server"], vserver);
    assert_eq!(pf[0]["userid"], victim);
    assert_eq!(pf[0]["class"], "data", "{summary:#}");
    let said = pf[0]["error"].as_str().unwrap();
    eprintln!("the failed prune said: {said}");
    assert!(said.starts_with("prune: "), "{summary:#}");
    let done = events
        .iter()
        .find_map(|e| match e {
            Event::Done {
                user,
                ok,
                prune_class,
                ..
            } if user == victim => Some((*ok, *prune_class)),
            _ => None,
        })
        .expect("a done event for the victim");
    assert_eq!(
        done,
        (true, Some(cyrvault_host::error::ErrorKind::Data)),
        "{events:?}"
    );
    // backed up: a good backup in the round, its new run in the archive, run 1 kept
    let round = summary["round"].as_i64().unwrap();
    let mut d = directory(&base);
    assert!(
        d.successes(round)
            .unwrap()
            .iter()
            .any(|(s, u, _)| s == vserver && u == victim)
    );
    assert!(d.failures(round).unwrap().is_empty());
    let runs = Catalog::open_read_only(&ua.catalog)
        .unwrap()
        .runs()
        .unwrap();
    assert_eq!(runs.len(), 2, "nothing pruned: {runs:?}");
    let after = std::fs::read(&ua.archive).unwrap();
    assert!(after.len() > original.len(), "the new run was appended");
    assert_eq!(&after[..bytes.len()], &bytes[..], "nothing rewritten");
    // fleet-status and the metrics say so
    let status = ok(cli(&["fleet-status"], &base).output().unwrap());
    assert!(
        status.contains(&format!(
            "PRUNE FAILED {vserver}/{victim} (data; backed up): prune: "
        )),
        "{status}"
    );
    let metrics = ok(cli(&["metrics"], &base).output().unwrap());
    for line in [
        "cyrvault_unit_round_users_prune_failed{server=\"s1\",unit=\"disk1\"} 1",
        "cyrvault_unit_round_users_prune_failed{server=\"s2\",unit=\"disk1\"} 0",
        "cyrvault_fleet_round_users_prune_failed 1",
        "cyrvault_fleet_round_users_backed_up 6",
        "cyrvault_fleet_round_users_failed 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }

    // 2. The damage repaired (the bytes put back): the next run's backup has nothing
    //    new, its prune now drops run 1; exit 0.
    let mut now = std::fs::read(&ua.archive).unwrap();
    now[..original.len()].copy_from_slice(&original);
    std::fs::write(&ua.archive, &now).unwrap();
    let (code, _, summary, err) = run_json(&base);
    assert_eq!(code, Some(0), "{summary:#}\n{err}");
    assert_eq!(summary["prune_failed"], 0, "{summary:#}");
    let runs = Catalog::open_read_only(&ua.catalog)
        .unwrap()
        .runs()
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    // (run 3 if the backup read the racy folder again, doc/backup.md)
    assert!(runs[0].run >= 2, "the last run kept: {runs:?}");

    // 3. A permanent failure (s1's secret refused: 77) beside a temporary one (s3's
    //    u3x000 archive locked by another writer: 75).
    let wrong = dir.join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret-0123456789abcdefghijkl\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = dir.join("refused.conf");
    std::fs::write(
        &refused,
        std::fs::read_to_string(&base).unwrap() + &format!("s1_secret_file: {}\n", wrong.display()),
    )
    .unwrap();
    let locked = ArchiveWriter::open(&user_archive(&dir, "u3x000").archive).unwrap();
    let (code, _, summary, err) = run_json(&refused);
    assert_eq!(code, Some(77), "{summary:#}\n{err}");
    let classes = failure_classes(&summary);
    assert_eq!(
        classes,
        BTreeMap::from([
            ("s1/u1x000".to_string(), "permission".to_string()),
            ("s1/u1x001".to_string(), "permission".to_string()),
            ("s3/u3x000".to_string(), "temporary".to_string()),
        ]),
        "{summary:#}"
    );
    // within the round every user was tried exactly once, whatever its class
    let round = summary["round"].as_i64().unwrap();
    let tried = attempts(&db, round);
    assert_eq!(tried.len(), 6, "{tried:?}");
    assert!(tried.values().all(|n| *n == 1), "{tried:?}");
    drop(locked);

    // 4. Fixed (the right secret, the lock gone), the next run at once: the permanent
    //    failures are tried and backed up; the temporary one waits for its backoff
    //    (an hour), so it is not tried.
    let (code, _, summary, err) = run_json(&base);
    assert_eq!(code, Some(0), "{summary:#}\n{err}");
    let round = summary["round"].as_i64().unwrap();
    let tried = attempts(&db, round);
    assert_eq!(tried.get("s1/u1x000"), Some(&1), "{tried:?}");
    assert_eq!(tried.get("s1/u1x001"), Some(&1), "{tried:?}");
    assert_eq!(tried.get("s3/u3x000"), None, "in backoff: {tried:?}");
    let done: BTreeSet<(String, String)> = d
        .successes(round)
        .unwrap()
        .into_iter()
        .map(|(s, u, _)| (s, u))
        .collect();
    assert!(done.contains(&("s1".into(), "u1x000".into())), "{done:?}");
    assert!(done.contains(&("s1".into(), "u1x001".into())), "{done:?}");
    assert!(d.failures(round).unwrap().is_empty());
    check_archives(&f, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
